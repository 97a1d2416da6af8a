"""Renderers: pure functions from result documents to text."""
