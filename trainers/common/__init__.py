"""Pieces shared by the trainers: templates, precision handling, parameter reports, caches."""
