"""Built-in backends. Each module imports its ML library only inside ``load``/``prepare``."""
