"""colmed.data_gen: clinical notes -> LLM (or LLM-free) queries -> mined hard negatives -> triplets.

The canonical output record is :class:`~data_gen.records.TripletRecord`; both trainer families read it.
"""
