"""The simulated arm and its synthetic cameras, by role: `arm` (joints, limits, dynamics),
`render` (drawing), `camera` (`SimCamera`), `robot` (`SimRobot`)."""
