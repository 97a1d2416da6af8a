"""The documents floor: every type that crosses a stage or is written to a file, as plain
typed data with its JSON, beneath the stages that make and read it (docs/architecture.md).
It imports nothing of perfgate but ``redact`` and ``limits``."""
