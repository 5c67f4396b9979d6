"""Feetech STS/SCS serial-bus servos: protocol, STS3215 registers, bus driver, emulator,
LeRobot calibration. pyserial (the `serial` extra) is imported only when a bus opens."""
