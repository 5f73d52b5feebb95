"""Firmware export: C arrays and the update loop for Cortex-M, builds and QEMU runs."""
