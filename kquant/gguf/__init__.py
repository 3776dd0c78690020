"""GGUF files: one validated reader, one atomic writer."""
