"""`picospec serve`: an OpenAI-compatible HTTP server on the edge (protocol, text, engine, http)."""
