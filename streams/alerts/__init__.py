"""The alert router: findings to notifications on configured channels."""
