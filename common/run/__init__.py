"""One experiment: its settings, inputs, rounds, outcome and reports."""
