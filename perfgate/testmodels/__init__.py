"""Models perfgate builds for itself, apart from the server lifecycle (``perfgate.serve``):
the tiny random-weight Llama that the CPU demo and tests serve (``tinymodel``), and that model
taught the bundled GPQA questions with a damaged copy, the accuracy gate's proof (``taught``)."""
