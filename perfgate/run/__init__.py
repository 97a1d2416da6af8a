"""``perfgate compare``: the phases of a paired run and their order."""
