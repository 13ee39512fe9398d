"""Scenarios run inside the VM, one module each: NAME, MODE (the agent's
mode), TIMEOUT (seconds), DESCRIPTION, and run(hb, res)."""
