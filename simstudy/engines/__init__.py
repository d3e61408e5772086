"""Numerical engines shared by the methods, each usable and tested on its own."""
