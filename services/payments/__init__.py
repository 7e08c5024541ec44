"""Payments: records counter, enterprise and online payments, allocates and posts them exactly once."""
