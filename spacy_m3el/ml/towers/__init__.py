"""Pretrained towers behind the matching network: any vision backbone, any text encoder,
frozen or partly trained, with their frozen outputs kept in a feature store."""
