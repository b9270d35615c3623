"""Entry-point helpers: the only code besides ``run_simulation.py`` that imports both apps."""
