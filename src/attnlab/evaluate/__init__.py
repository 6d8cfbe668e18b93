"""attnlab.evaluate"""
