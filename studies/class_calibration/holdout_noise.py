import torch, sys
import numpy as np
torch.set_num_threads(1)
import bayesfuse as bf
from bayesfuse.posterior.class_calibration import map_log_temperature, tempered_log_predictive
from bayesfuse.model.head_calibration import fit_class_calibration
from bayesfuse.metrics import ece, nll
from bayesfuse._labels import label_codes
seed = int(sys.argv[1])
data, truth = bf.datasets.simulate(n_patients=2000, missing_rate=0.2, seed=seed, test_fraction=0.6)
train, test = data.subset(split="train"), data.subset(split="test")
m = bf.FusionModel(train, heads={"subtype": "categorical", "origin": "categorical"}, latent_dim=8)
m.fit(seed=seed, progress=False, calibrate=False)
post = m.predict(test, 200, calibrated=False)
val = train.subset(ids=m.train_config_["validation_ids"])
variants = {"raw": None, "pooled": fit_class_calibration(m, val, pattern_sd=1e-6), "psd.25": fit_class_calibration(m, val)}
# natural-pattern only: no synthetic hiding
import bayesfuse.model.head_calibration as hc
orig = hc.calibration_patterns
hc.calibration_patterns = lambda mods: [tuple(mods)]
variants["natural_only"] = fit_class_calibration(m, val, pattern_sd=1e-6)
hc.calibration_patterns = orig
pres = post.presence[m.modalities].to_numpy()
for h in ("subtype", "origin"):
    y = label_codes(test.targets[h].to_numpy(), post.classes(h))
    lp = np.log(np.clip(post.probs(h).astype(float), 1e-300, None))
    t_test = np.exp(map_log_temperature(lp, y, None, 0, np.inf))
    out = []
    for name, mp in list(variants.items()) + [("oracle", t_test)]:
        t = 1.0 if mp is None else (mp if np.isscalar(mp) else mp[h].patient_temperatures(pres))
        p = np.exp(tempered_log_predictive(lp, t))
        out.append(f"{name} T={np.mean(t):.2f} nll={nll(p, y):.3f} ece={ece(p, y):.3f}")
    print(seed, h, " | ".join(out))
    # per-pattern oracle on test
    keys = pres.sum(1)
    print("   per #modalities oracle T:", {int(k): round(float(np.exp(map_log_temperature(lp[:, keys==k], y[keys==k], None, 0, np.inf))),2) for k in np.unique(keys)}, "n", np.bincount(keys))
