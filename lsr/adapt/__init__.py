"""Adapting a collection's query side to the collection: learned inference-free query weights
(:mod:`lsr.adapt.trainer`), label-free fusion weights (:mod:`lsr.adapt.fusion`), training data
(:mod:`lsr.adapt.data`) and the ``lsr adapt`` command (:mod:`lsr.adapt.run`)."""
