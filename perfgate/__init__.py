"""perfgate: decide whether a change to an LLM serving stack made it faster or slower."""

__version__ = "0.1.0"
