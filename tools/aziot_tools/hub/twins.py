"""Device twins as the emulator keeps them: desired and reported, each versioned.

Rules from the hub's docs ("Understand and use device twins"): a PATCH
merges recursively, `null` deletes a key, each section carries its own
`$version` that grows by one per change, and each section is limited to
32 KB. Device-facing GETs carry no `$metadata`; the service view does.
"""

import copy
import datetime
import json
import os
import threading

SECTION_LIMIT = 32 * 1024


class TwinError(ValueError):
    """A patch the hub would refuse with 400."""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def merge_patch(target: dict, patch: dict, metadata: dict, stamp: str):
    """Apply patch to target in place; metadata mirrors the keys with $lastUpdated."""
    for key, value in patch.items():
        if key.startswith("$"):
            raise TwinError("property names may not start with '$': %r" % key)
        if value is None:
            target.pop(key, None)
            metadata.pop(key, None)
        elif isinstance(value, dict):
            child = target.get(key)
            if not isinstance(child, dict):
                child = target[key] = {}
            child_meta = metadata.get(key)
            if not isinstance(child_meta, dict):
                child_meta = metadata[key] = {}
            child_meta["$lastUpdated"] = stamp
            merge_patch(child, value, child_meta, stamp)
        else:
            target[key] = copy.deepcopy(value)
            metadata[key] = {"$lastUpdated": stamp}


def _empty_section() -> dict:
    return {"properties": {}, "metadata": {}, "version": 1}


class TwinStore:
    """All twins of one emulator, saved to twins.json so they outlive a restart."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._twins = {}
        if os.path.exists(path):
            with open(path) as f:
                self._twins = json.load(f)

    def _twin(self, identity: str) -> dict:
        twin = self._twins.get(identity)
        if twin is None:
            twin = self._twins[identity] = {"desired": _empty_section(), "reported": _empty_section()}
        return twin

    def _save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self._twins, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)

    def device_view(self, identity: str) -> dict:
        """What a device's GET returns: {"desired": {..., "$version"}, "reported": {...}}."""
        with self._lock:
            twin = self._twin(identity)
            return {name: dict(copy.deepcopy(sec["properties"]), **{"$version": sec["version"]})
                    for name, sec in twin.items()}

    def service_view(self, identity: str) -> dict:
        """The service side's view: properties with $version and $metadata."""
        with self._lock:
            twin = self._twin(identity)
            return {"deviceId": identity.split("/")[0], "moduleId": identity.partition("/")[2] or None,
                    "properties": {name: dict(copy.deepcopy(sec["properties"]),
                                              **{"$version": sec["version"],
                                                 "$metadata": copy.deepcopy(sec["metadata"])})
                                   for name, sec in twin.items()}}

    def patch(self, identity: str, section: str, patch) -> int:
        """Merge patch into desired or reported; returns the section's new $version."""
        if not isinstance(patch, dict):
            raise TwinError("a twin patch must be a JSON object")
        with self._lock:
            sec = self._twin(identity)[section]
            props, meta = copy.deepcopy(sec["properties"]), copy.deepcopy(sec["metadata"])
            stamp = _now()
            merge_patch(props, patch, meta, stamp)
            meta["$lastUpdated"] = stamp
            if len(json.dumps(props)) > SECTION_LIMIT:
                raise TwinError("%s properties would exceed %d bytes" % (section, SECTION_LIMIT))
            sec["properties"], sec["metadata"] = props, meta
            sec["version"] += 1
            self._save()
            return sec["version"]
