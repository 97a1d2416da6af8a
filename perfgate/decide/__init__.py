"""From measurements to a verdict: intervals (``stats``), per-metric comparisons
(``comparison``) and the rules (``verdict``)."""
