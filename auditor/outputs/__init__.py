"""Outputs: one module per format. They read findings, hosts and connections, never detect."""
