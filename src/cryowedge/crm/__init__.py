"""Constrained reconstruction model (CRM) for subtomogram averaging."""

from cryowedge.crm.problem import CRMCopy, CRMData, sphere_support

__all__ = ["CRMCopy", "CRMData", "sphere_support"]
