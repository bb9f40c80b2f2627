"""The pure loyalty engine: programs, orders and their evaluation. No I/O, no clock."""
