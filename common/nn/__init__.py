"""Building blocks every family composes its model from; they take plain ints, never a family's config."""
