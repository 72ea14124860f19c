/** The tenant `default`, made by the tenants migration with this fixed id and no limits. */
export const DEFAULT_TENANT_ID = '00000000-0000-0000-0000-000000000000';
export const DEFAULT_TENANT_NAME = 'default';
