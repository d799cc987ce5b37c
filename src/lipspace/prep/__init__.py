"""Real-video preprocessing: decode, track and write a lipspace dataset directory from a talking-head clip."""
