"""The sim arm's joints, which every tiny checkpoint here is built for."""

JOINTS = [
    f"{m}.pos"
    for m in ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
]
