"""Simulation models shipped with ambidex (see docs/sim.md)."""
