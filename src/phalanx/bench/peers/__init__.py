"""The peers phalanx is measured against in `phalanx bench peers`: PySyncObj and etcd."""
