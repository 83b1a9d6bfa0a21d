"""Revision scripts of the weightstore index schema, one file per revision."""
