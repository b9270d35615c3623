"""How the protocol travels over Flower: the records both apps read and write."""
