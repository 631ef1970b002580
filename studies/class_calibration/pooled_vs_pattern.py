import torch, time, warnings, sys
import numpy as np
torch.set_num_threads(1)
import bayesfuse as bf
from bayesfuse.posterior.class_calibration import map_log_temperature, tempered_log_predictive
from bayesfuse.metrics import ece, nll
from bayesfuse._labels import label_codes
seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
data, truth = bf.datasets.simulate(n_patients=800, missing_rate=0.2, seed=seed)
train, test = data.subset(split="train"), data.subset(split="test")
m = bf.FusionModel(train, heads={"subtype": "categorical", "origin": "categorical"}, latent_dim=8)
m.fit(max_epochs=300, seed=seed, progress=False)
post = m.predict(test, 500, calibrated=False)
for h in ("subtype", "origin"):
    y = label_codes(test.targets[h].to_numpy(), post.classes(h))
    lp = np.log(np.clip(post.probs(h).astype(float), 1e-300, None))
    c = m.class_calibration_[h]
    t_test = np.exp(map_log_temperature(lp, y, None, 0, np.inf))
    tp = c.patient_temperatures(post.presence.to_numpy())
    out = []
    for name, t in (("raw", 1.0), ("pooled", c.pooled), ("pattern", tp), ("oracle", t_test)):
        p = np.exp(tempered_log_predictive(lp, t))
        out.append(f"{name} T={np.mean(t):.2f} nll={nll(p, y):.3f} ece={ece(p, y):.3f}")
    print(seed, h, " | ".join(out))
