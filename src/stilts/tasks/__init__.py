"""The task registry: every task is one declaration in a family module."""
