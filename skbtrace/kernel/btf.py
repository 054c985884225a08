"""A minimal reader of the kernel's BTF (/sys/kernel/btf/vmlinux).

Only what the tools need: enum values (SKB_GSO_* names as the running kernel
defines them) and a function's first parameter type (skb_gro_receive takes
struct sk_buff ** in 4.18 and struct sk_buff * from 4.19 on). Pure Python and
stdlib so it works without bcc and on Python 3.6.
"""
import struct

BTF_PATH = "/sys/kernel/btf/vmlinux"
BTF_MAGIC = 0xEB9F

KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_FWD, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 7, 8, 9, 10, 11
KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_FLOAT = 12, 13, 14, 15, 16
KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 17, 18, 19

# bytes that follow struct btf_type: (fixed, per vlen item)
_TRAILER = {
    KIND_INT: (4, 0), KIND_ARRAY: (12, 0), KIND_STRUCT: (0, 12), KIND_UNION: (0, 12),
    KIND_ENUM: (0, 8), KIND_FUNC_PROTO: (0, 8), KIND_VAR: (4, 0), KIND_DATASEC: (0, 12),
    KIND_DECL_TAG: (4, 0), KIND_ENUM64: (0, 12),
}


class BTFError(Exception):
    pass


class BTF(object):
    def __init__(self, data):
        if len(data) < 24:
            raise BTFError("BTF blob too short")
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != BTF_MAGIC:
            raise BTFError("bad BTF magic 0x%x" % magic)
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        self._data = data
        self._types_start = hdr_len + type_off
        self._types_end = self._types_start + type_len
        self._str_start = hdr_len + str_off
        self._str_end = self._str_start + str_len
        self._offsets = [None]  # type id -> offset of its btf_type
        off = self._types_start
        while off < self._types_end:
            self._offsets.append(off)
            info = struct.unpack_from("<I", data, off + 4)[0]
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            fixed, per = _TRAILER.get(kind, (0, 0))
            off += 12 + fixed + per * vlen

    @classmethod
    def load(cls, path=BTF_PATH):
        try:
            with open(path, "rb") as f:
                return cls(f.read())
        except (IOError, OSError) as e:
            raise BTFError("cannot read %s: %s" % (path, e.strerror or e))

    def name(self, name_off):
        start = self._str_start + name_off
        end = self._data.find(b"\0", start, self._str_end)
        return self._data[start:end].decode("ascii", "replace")

    def _type(self, tid):
        off = self._offsets[tid]
        name_off, info, size_or_type = struct.unpack_from("<III", self._data, off)
        return off, name_off, (info >> 24) & 0x1F, info & 0xFFFF, size_or_type

    def _items(self, off, kind, vlen):
        fixed, per = _TRAILER.get(kind, (0, 0))
        base = off + 12 + fixed
        for i in range(vlen):
            yield base + i * per

    def enum_containing(self, member):
        """Return {name: value} of the first enum that has `member`."""
        want = member.encode("ascii")
        for tid in range(1, len(self._offsets)):
            off, _n, kind, vlen, _s = self._type(tid)
            if kind not in (KIND_ENUM, KIND_ENUM64) or vlen == 0:
                continue
            names = {}
            hit = False
            for item in self._items(off, kind, vlen):
                noff = struct.unpack_from("<I", self._data, item)[0]
                start = self._str_start + noff
                end = self._data.find(b"\0", start, self._str_end)
                raw = self._data[start:end]
                if kind == KIND_ENUM:
                    value = struct.unpack_from("<i", self._data, item + 4)[0] & 0xFFFFFFFF
                else:
                    lo, hi = struct.unpack_from("<II", self._data, item + 4)
                    value = lo | (hi << 32)
                names[raw.decode("ascii", "replace")] = value
                hit = hit or raw == want
            if hit:
                return names
        return None

    def func_proto(self, func):
        """(number of parameters, whether it returns a value) of kernel
        function `func`; None when BTF has no such function (static and
        inlined, renamed, or not a function)."""
        if not hasattr(self, "_funcs"):
            self._funcs = {}
            for tid in range(1, len(self._offsets)):
                _off, name_off, kind, _vlen, proto = self._type(tid)
                if kind == KIND_FUNC:
                    self._funcs.setdefault(self.name(name_off), proto)
        proto = self._funcs.get(func)
        if proto is None:
            return None
        _poff, _n, pkind, pvlen, ret = self._type(proto)
        return (pvlen, ret != 0) if pkind == KIND_FUNC_PROTO else None

    def func_first_param_ptr_depth(self, func):
        """How many pointer levels the first parameter of `func` has (1 for
        struct sk_buff *, 2 for struct sk_buff **); None when unknown."""
        for tid in range(1, len(self._offsets)):
            off, name_off, kind, _vlen, proto = self._type(tid)
            if kind != KIND_FUNC or self.name(name_off) != func:
                continue
            poff, _n, pkind, pvlen, _ret = self._type(proto)
            if pkind != KIND_FUNC_PROTO or pvlen == 0:
                return None
            ptype = struct.unpack_from("<I", self._data, poff + 12 + 4)[0]
            depth = 0
            while ptype:
                _o, _n, k, _v, nxt = self._type(ptype)
                if k == KIND_PTR:
                    depth += 1
                elif k not in (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG):
                    break
                ptype = nxt
            return depth
        return None
