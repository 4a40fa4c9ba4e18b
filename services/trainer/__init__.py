"""The trainer stage: CLIP training with open_clip at DataComp's scales, on winnow's shards."""
