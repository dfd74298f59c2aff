"""The device application: check everything, then run the pipeline; else send nothing.

    from veil import app
    app.run(esp32.NVS("veil"), events, transport="serial", state=".")
    app.run(nvs, events, transport=MqttTransport("10.0.0.2", 1883, dev_id))

Before the first sample, `start` checks that every key is provisioned, that the policy is
present, authentic, for this device and well-formed, and that the message counter and the
ε budget records are readable. If any check fails it prints why on the console
("veil: refusing to send anything: ...") and returns None: the device then sends nothing.
"""

import gc

from veil import VeilError, keys, policy
from veil.budget import Budget
from veil.egress import Counter, Egress
from veil.pipeline import Pipeline
from veil.transport import get as get_transport


def start(nvs, transport="serial", state=".", sampler=None):
    """A ready Pipeline, or None after printing why the device refuses to send.

    `transport` is a registered transport's name ("serial", made with no arguments) or a
    ready transport object with `send(msg)`, such as `MqttTransport(host, port, dev_id)`.
    """
    try:
        k = keys.load(nvs)
        pol = policy.load(k.policy, k.policy_key, k.dev_id)
        counter = Counter(state + "/veil.ctr")
        budget = Budget(state + "/veil.eps", pol.period, pol.eps_period)
        if isinstance(transport, str):
            transport = get_transport(transport)()
        egress = Egress(k, counter, transport)
        gc.collect()
        gc.collect()  # the pipeline's buffers are the largest blocks: make them on a clean heap
        return Pipeline(pol, k, budget, egress, sampler)
    except VeilError as e:
        print("veil: refusing to send anything:", e)
        return None


def run(nvs, events, transport="serial", state=".", sampler=None):
    """Start, then replay `events` (lines of JSON) through the pipeline; returns it or None."""
    from veil.sources.replay import replay

    pipe = start(nvs, transport, state, sampler)
    if pipe is None:
        return None
    _ok, _rejected, last_t = replay(events, pipe.feed)
    if last_t is not None:
        pipe.flush(last_t)
    return pipe
