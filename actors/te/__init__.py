"""te: transfer entropy (KSG, JIDT semantics) between time series, significance and TE networks.

    from actors.te import transfer_entropy, te_significance, te_network
    res = transfer_entropy(x, y, k_hist=1, delay=1)        # TE(x -> y) in nats, res.local per sample
    sig = te_significance(x, y, significance={"n_surrogates": 100})
    net = te_network(data, names, {"correction": "max"})   # net.graph: networkx DiGraph

Engine modules (no Ray): config (pydantic, on actors.common.config), embedding (checks, delay
embedding, z-score + noise), ksg (fast cKDTree KSG CMI/MI), batched (the torch twin and Triton
kernels of kernels/te/ on a device), significance (surrogates, p-values, max-statistic / BH), network
(pairs -> DiGraph), multivariate (greedy conditioning), multivariate_batched (all targets' greedy
rounds in batched device launches), ragwitz (auto embedding), plots
(network.png), engine (the entry points). Ray wrappers, imported by their module path:
actor.TEEstimator (a BaseWorker) and pool (run_network: bivariate pairs on TEEstimators with resume;
run_multivariate: one batched task per GPU, else one Ray task per target; compute_network: either, by mode). kernels/te/reference.py
is the brute-force oracle.
"""
from actors.te.config import NetworkConfig, RagwitzConfig, SignificanceConfig, TENetworkSpec, TEParams
from actors.te.engine import (
    MIResult,
    TEResult,
    TESignificance,
    conditional_mutual_information,
    mutual_information,
    te_significance,
    transfer_entropy,
)
from actors.te.multivariate import multivariate_network
from actors.te.network import TENetwork, te_network
from actors.te.ragwitz import ragwitz

__all__ = [
    "MIResult", "NetworkConfig", "RagwitzConfig", "SignificanceConfig", "TENetwork", "TENetworkSpec", "TEParams",
    "TEResult", "TESignificance", "conditional_mutual_information", "multivariate_network", "mutual_information",
    "ragwitz", "te_network", "te_significance", "transfer_entropy",
]
