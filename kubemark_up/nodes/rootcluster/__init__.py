"""Hollow nodes as pods on a root cluster."""
