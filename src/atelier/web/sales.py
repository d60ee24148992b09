"""Sales pages and endpoints: pay for an artwork, the Stripe webhook, receipts, HD downloads."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
