"""Served model kinds behind one small contract: load a bundle, answer, release."""
