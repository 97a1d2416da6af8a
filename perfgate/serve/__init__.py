"""vLLM servers: starting, watching and stopping them (``server``), what perfgate asks a
running one (``server_api``), and the tiny local test model (``tinymodel``)."""
