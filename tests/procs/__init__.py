"""Helpers for the reliability tests: worker scripts the tests spawn and what they share."""
