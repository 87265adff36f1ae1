# Reads a run's TensorBoard event files with TensorBoard's own event reader (PyPI tensorboard) and prints every
# scalar as JSON: {"tag": [[step, value], ...]}.
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
acc.Reload()
print(json.dumps({tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}))
