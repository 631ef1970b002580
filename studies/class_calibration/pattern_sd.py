import torch, sys
import numpy as np
torch.set_num_threads(1)
import bayesfuse as bf
from bayesfuse.posterior.class_calibration import map_log_temperature, tempered_log_predictive
from bayesfuse.model.head_calibration import fit_class_calibration
from bayesfuse.metrics import ece, nll, ece_consistency
from bayesfuse._labels import label_codes
seed = int(sys.argv[1]); n = int(sys.argv[2]); mr = float(sys.argv[3])
data, truth = bf.datasets.simulate(n_patients=n, missing_rate=mr, seed=seed, test_fraction=0.6)
train, test = data.subset(split="train"), data.subset(split="test")
m = bf.FusionModel(train, heads={"subtype": "categorical", "origin": "categorical"}, latent_dim=8)
m.fit(max_epochs=300, seed=seed, progress=False, calibrate=False)
post = m.predict(test, 200, calibrated=False)
val = train.subset(ids=m.train_config_["validation_ids"])
variants = {"raw": None}
for psd in (1e-6, 0.1, 0.25, 0.5):
    variants[f"psd{psd}"] = fit_class_calibration(m, val, pattern_sd=psd)
print("n_train", train.n_samples, "n_val", val.n_samples, "n_test", test.n_samples)
for h in ("subtype", "origin"):
    y = label_codes(test.targets[h].to_numpy(), post.classes(h))
    lp = np.log(np.clip(post.probs(h).astype(float), 1e-300, None))
    t_test = np.exp(map_log_temperature(lp, y, None, 0, np.inf))
    out = []
    for name, mp in list(variants.items()) + [("oracle", t_test)]:
        t = 1.0 if mp is None else (mp if np.isscalar(mp) else mp[h].patient_temperatures(post.presence.to_numpy()))
        p = np.exp(tempered_log_predictive(lp, t))
        out.append(f"{name} T={np.mean(t):.2f} nll={nll(p, y):.3f} ece={ece(p, y):.3f}")
    print(seed, h, " | ".join(out))
