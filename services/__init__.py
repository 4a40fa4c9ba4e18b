"""winnow's services: one package per stage, each a thin shell around its stage."""
