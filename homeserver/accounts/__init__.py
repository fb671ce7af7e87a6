"""Accounts: registration, login and tokens, devices and sessions, UIA, profiles."""
