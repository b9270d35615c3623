"""Signal processing and ADMM maths on numpy arrays: nothing here knows about parties or runs."""
