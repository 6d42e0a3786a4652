"""The user-facing flows behind the ``deflow`` command: compile, simulate, demo, bitstream,
bench and the all-config estimates."""
