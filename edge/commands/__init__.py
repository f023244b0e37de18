"""Handlers of the service-side `metascope` subcommands: run, status, export, doctor."""
