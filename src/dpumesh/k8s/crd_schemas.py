"""Field schemas for the custom resources the roles emit.

Written from the upstream CRDs of spiderpool 1.2, multus (NetworkAttachmentDefinition v1)
and sriov-network-operator 1.6, restricted to the fields the roles set; anything else is
rejected so a typo is caught offline. ``tests/unit/k8s/test_upstream_crds.py`` checks the
same objects against the real upstream schemas when a CRD directory is available.
"""

from __future__ import annotations

_STR = {"type": "string"}
_STR_LIST = {"type": "array", "items": _STR}
_BOOL = {"type": "boolean"}


def _obj(properties: dict, required: tuple[str, ...] = ()) -> dict:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


def _int(minimum: int | None = None, maximum: int | None = None) -> dict:
    schema: dict = {"type": "integer"}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


_IPPOOLS = _obj({"ipv4": _STR_LIST, "ipv6": _STR_LIST})
_ROUTE = _obj({"dst": _STR, "gw": _STR}, ("dst", "gw"))

SPIDER_IPPOOL = _obj(
    {
        "subnet": _STR,
        "ips": _STR_LIST,
        "excludeIPs": _STR_LIST,
        "gateway": _STR,
        "ipVersion": {"type": "integer", "enum": [4, 6]},
        "nodeName": _STR_LIST,
        "multusName": _STR_LIST,
        "routes": {"type": "array", "items": _ROUTE},
        "default": _BOOL,
        "disable": _BOOL,
    },
    ("subnet",),
)

SPIDER_MULTUS_CONFIG = _obj(
    {
        "cniType": {"enum": ["macvlan", "ipvlan", "vlan", "sriov", "ovs", "ib-sriov", "ipoib", "custom"]},
        "enableCoordinator": _BOOL,
        "coordinator": _obj(
            {
                "mode": {"enum": ["auto", "underlay", "overlay", "disabled"]},
                "podCIDRType": {"enum": ["auto", "cluster", "calico", "cilium", "none"]},
                "tunePodRoutes": _BOOL,
                "hijackCIDR": _STR_LIST,
                "podDefaultRouteNIC": _STR,
            }
        ),
        "sriov": _obj(
            {
                "resourceName": _STR,
                "vlanID": _int(0, 4094),
                "mtu": _int(0),
                "rdmaIsolation": _BOOL,
                "ippools": _IPPOOLS,
            }
        ),
    }
)

NETWORK_ATTACHMENT_DEFINITION = _obj({"config": _STR})

SRIOV_NETWORK_NODE_POLICY = _obj(
    {
        "resourceName": _STR,
        "nodeSelector": {"type": "object", "additionalProperties": _STR},
        "numVfs": _int(0),
        "priority": _int(0, 99),
        "mtu": _int(1),
        "deviceType": {"enum": ["netdevice", "vfio-pci"]},
        "isRdma": _BOOL,
        "externallyManaged": _BOOL,
        "nicSelector": _obj(
            {"pfNames": _STR_LIST, "rootDevices": _STR_LIST, "vendor": _STR, "deviceID": _STR, "netFilter": _STR}
        ),
    },
    ("nicSelector", "nodeSelector", "numVfs", "resourceName"),
)

# (apiVersion, kind) → (namespaced, spec schema)
CUSTOM_RESOURCES: dict[tuple[str, str], tuple[bool, dict]] = {
    ("spiderpool.spidernet.io/v2beta1", "SpiderIPPool"): (False, SPIDER_IPPOOL),
    ("spiderpool.spidernet.io/v2beta1", "SpiderMultusConfig"): (True, SPIDER_MULTUS_CONFIG),
    ("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition"): (True, NETWORK_ATTACHMENT_DEFINITION),
    ("sriovnetwork.openshift.io/v1", "SriovNetworkNodePolicy"): (True, SRIOV_NETWORK_NODE_POLICY),
}

# kind → name of its CustomResourceDefinition, which must be Established before the kind is applied.
CRD_NAMES: dict[str, str] = {
    "SpiderIPPool": "spiderippools.spiderpool.spidernet.io",
    "SpiderMultusConfig": "spidermultusconfigs.spiderpool.spidernet.io",
    "NetworkAttachmentDefinition": "network-attachment-definitions.k8s.cni.cncf.io",
    "SriovNetworkNodePolicy": "sriovnetworknodepolicies.sriovnetwork.openshift.io",
}
