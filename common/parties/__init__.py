"""The access point and the users of every method, and what crosses the air between them."""
