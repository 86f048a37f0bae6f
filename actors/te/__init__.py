"""te: transfer entropy (KSG, JIDT semantics) between time series, significance and TE networks.

    from actors.te import transfer_entropy, te_significance, te_network
    res = transfer_entropy(x, y, k_hist=1, delay=1)        # TE(x -> y) in nats, res.local per sample
    sig = te_significance(x, y, significance={"n_surrogates": 100})
    net = te_network(data, names, {"correction": "max"})   # net.graph: networkx DiGraph

Modules: config (pydantic), embedding (checks, delay embedding, z-score + noise), ksg (fast
cKDTree KSG CMI/MI), significance (surrogates, p-values, max-statistic / BH), network (pairs ->
DiGraph), ragwitz (auto embedding), engine (the entry points). engine, ksg, network and ragwitz
import no Ray; actor.py and pool.py wrap them. kernels/te/reference.py is the brute-force oracle.
"""
from actors.common.errors import InputError
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
from actors.te.network import TENetwork, te_network
from actors.te.ragwitz import ragwitz

__all__ = [
    "InputError", "MIResult", "NetworkConfig", "RagwitzConfig", "SignificanceConfig", "TENetwork",
    "TENetworkSpec", "TEParams", "TEResult", "TESignificance", "conditional_mutual_information",
    "mutual_information", "ragwitz", "te_network", "te_significance", "transfer_entropy",
]
