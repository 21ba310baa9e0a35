"""Network definitions, weights I/O and cost counting."""
